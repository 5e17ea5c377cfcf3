# caplab operator image: a single static (musl) binary on an empty base.
# Built by hack/build-images.sh, whose small build context mirrors the repo layout;
# building from the repo root works too (but sends the large target/ dir):
#   docker build -f images/operator.Dockerfile -t caplab/operator:dev .
FROM scratch
ARG BINARY=target/x86_64-unknown-linux-musl/release/caplab-operator
COPY ${BINARY} /caplab-operator
USER 65532:65532
ENTRYPOINT ["/caplab-operator"]
