# Builds the switchyard binary; run with a config mounted at /etc/switchyard.yaml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin switchyard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
EXPOSE 6432
ENTRYPOINT ["switchyard"]
CMD ["serve", "--config", "/etc/switchyard.yaml"]
