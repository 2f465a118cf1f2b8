# One image holds the ERIOP binaries (and the device simulator); docker-compose.yml picks the command.
# syntax=docker/dockerfile:1

FROM rust:1.95-bookworm AS build
WORKDIR /src
# protoc: fundamentum-iot-mqtt-proto generates Fundamentum's protobuf bindings at build time.
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/eriop-gateway target/release/eriop-projections \
       target/release/eriop-bridge target/release/eriop-migrate target/release/eriop-simulate \
       target/release/eriop-audit /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home eriop
COPY --from=build /out/ /usr/local/bin/
USER eriop
ENV ERIOP_PROFILE=production \
    ERIOP_HTTP_ADDR=0.0.0.0:8080 \
    ERIOP_LOG_FORMAT=json
EXPOSE 8080
CMD ["eriop-gateway"]
