# One static binary in a distroless image (no shell at run time).
# Build: docker build -t sso-operator:dev .
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crds ./crds
# A workspace member and dev-dependency: cargo reads its manifest to resolve
# the lock file, though the release binary does not use it.
COPY tests/support ./tests/support
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/sso-operator /sso-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /sso-operator /sso-operator
USER 65532:65532
ENTRYPOINT ["/sso-operator"]
