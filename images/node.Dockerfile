# caplab node image: a single static (musl) binary on an empty base.
# Built by hack/build-images.sh, whose small build context mirrors the repo layout;
# building from the repo root works too (but sends the large target/ dir):
#   docker build -f images/node.Dockerfile -t caplab/node:dev .
FROM scratch
ARG BINARY=target/x86_64-unknown-linux-musl/release/caplab-node
COPY ${BINARY} /caplab-node
USER 65532:65532
ENTRYPOINT ["/caplab-node"]
