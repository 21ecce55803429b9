# syntax=docker/dockerfile:1.7
# The TON chain emulator (dev and tests only): @ton/sandbox behind the toncenter v2 subset.
# Build from the repository root:  docker build -f images/chain-emulator.Dockerfile -t cocoon-chain-emulator:dev .

ARG NODE_IMAGE=node:20.19.5-bookworm-slim
# the runtime needs node, not npm: a registry-free build (images/build.sh) passes a smaller base
ARG NODE_RUNTIME_IMAGE=${NODE_IMAGE}

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY contracts/package.json contracts/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error

FROM ${NODE_RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.title="cocoon-chain-emulator" \
      org.opencontainers.image.description="Local TON chain (real TVM) for Cocoon development" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY contracts/package.json ./package.json
COPY contracts/emulator ./emulator
USER 65532:65532
ENTRYPOINT ["node", "emulator/server.mjs"]
CMD ["--host", "0.0.0.0", "--port", "8081"]
