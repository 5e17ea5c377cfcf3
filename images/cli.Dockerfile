# caplab CLI image: the `caplab` binary (static, musl) on an empty base. The operator runs
# experiments (spec.workload) in it as Jobs: `caplab experiment …`, which needs no shell,
# no tar and no writable root (results go to the mounted PVC, the verdict to
# /dev/termination-log). Built by hack/build-images.sh (its small build context mirrors
# the repo layout); building from the repo root works too (but sends the large target/ dir):
#   docker build -f images/cli.Dockerfile -t caplab/cli:dev .
FROM scratch
ARG BINARY=target/x86_64-unknown-linux-musl/release/caplab
COPY ${BINARY} /caplab
USER 65532:65532
ENTRYPOINT ["/caplab"]
