"""TDX collateral from a PCCS (a local stand-in serving Intel's real collateral), cached in
memory and on disk, refreshed before expiry (also by the operator's background pass), or from an
air-gapped bundle; then verified."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kopf
import pytest
from aiohttp import web
from attestation_vectors import SNP_AT, read
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from cocoon import keys
from cocoon.agent.simulated import SimulatedTee
from cocoon.agent.simulated_pki import PSS
from cocoon.api.attestationpolicy import AttestationPolicySpec, ConfigMapKeyRef
from cocoon.attestation import appraisal, encoding
from cocoon.attestation.collateral import (
    CollateralCache,
    CollateralSupplier,
    Sources,
    expires_at,
    key_of_quote,
    parse_bundle,
)
from cocoon.attestation.evidence import CpuEvidence, NodeEvidence
from cocoon.attestation.policy import Policy, PolicyError
from cocoon.attestation.verdict import Tee
from cocoon.controllers import loops
from cocoon.controllers.attestednode import AttestationState, refresh_collateral
from cocoon.devstack.pccs import serve

QUOTE = read("tdx/tdx_quote.bin")
COLLATERAL = read("tdx/tdx_quote.collateral.json").decode()
OTHER = read("tdx/tdx_quote_outdated.collateral.json").decode()
EXPIRES = expires_at(COLLATERAL)
NOW = EXPIRES - 20 * 86400  # well inside the collateral's validity
DEFAULT = Policy.default()


def verified(collateral: str | None, now: int = NOW) -> str | None:
    return appraisal.appraise_tdx(QUOTE, collateral, DEFAULT, now=now).reason


async def no_network(url: str, quote: bytes) -> str:
    raise AssertionError("no PCCS request was expected")


async def test_fetch_cache_restart_and_refresh(tmp_path: Path) -> None:
    with serve(COLLATERAL) as pccs:
        sources = Sources(pccs_url=pccs.url)
        supplier = CollateralSupplier(CollateralCache(tmp_path))
        got = await supplier.collateral(QUOTE, sources, NOW)
        assert got is not None and got[1] == "pccs"
        assert verified(got[0]) is None
        assert [r.split("?")[0] for r in pccs.requests] == [
            "/sgx/certification/v4/pckcrl",
            "/tdx/certification/v4/tcb",
            "/tdx/certification/v4/qe/identity",
            "/sgx/certification/v4/rootcacrl",
        ]
        again = await supplier.collateral(QUOTE, sources, NOW + 3600)
        assert again is not None and again[1] == "cache" and len(pccs.requests) == 4

        # a restart: a new cache reads the disk copy, nothing is fetched
        restarted = CollateralSupplier(CollateralCache(tmp_path), fetch=no_network)
        cached = await restarted.collateral(QUOTE, sources, NOW)
        assert cached is not None and cached[1] == "cache" and verified(cached[0]) is None

        # within refreshBefore of nextUpdate: fetched again
        near = EXPIRES - sources.refresh_before + 10
        refreshed = await supplier.collateral(QUOTE, sources, near)
        assert refreshed is not None and refreshed[1] == "pccs" and len(pccs.requests) == 8

        # the PCCS is down: the cached copy serves until it really expires, then nothing does
        pccs.down = True
        stale = await supplier.collateral(QUOTE, sources, near)
        assert stale is not None and stale[1] == "cache"
        assert await supplier.collateral(QUOTE, sources, EXPIRES + 1) is None


async def test_collateral_for_another_platform_is_not_used(tmp_path: Path) -> None:
    async def wrong_platform(url: str, quote: bytes) -> str:
        return OTHER

    supplier = CollateralSupplier(CollateralCache(tmp_path), fetch=wrong_platform)
    assert await supplier.collateral(QUOTE, Sources(pccs_url="http://127.0.0.1:9"), NOW) is None
    assert supplier.cache.entries == {}


async def test_air_gapped_bundle_from_a_configmap() -> None:
    bundle = json.dumps([json.loads(OTHER), json.loads(COLLATERAL)]).encode()
    ref = {"name": "tdx-collateral", "key": "bundle.json"}
    spec = AttestationPolicySpec.model_validate({"tdx": {"collateral": {"bundle": ref}}})

    def resolve(r: ConfigMapKeyRef) -> bytes:
        assert (r.name, r.key) == ("tdx-collateral", "bundle.json")
        return bundle

    policy = Policy.from_spec(spec, resolve)
    assert set(policy.tdx.collateral.bundle) == {
        "tdx-B0C06F000000-platform",
        "tdx-90C06F000000-platform",
    }
    supplier = CollateralSupplier(CollateralCache(), fetch=no_network)
    evidence = NodeEvidence(CpuEvidence(Tee.TDX, QUOTE))
    supplied = await supplier.supply(evidence, policy.tdx.collateral, NOW)
    assert verified(supplied.cpu.collateral) is None
    # an expired bundle entry is not offered (the admin must refresh the ConfigMap)
    assert await supplier.collateral(QUOTE, policy.tdx.collateral, EXPIRES + 1) is None


async def test_our_collateral_wins_over_the_agents(tmp_path: Path) -> None:
    with serve(COLLATERAL) as pccs:
        supplier = CollateralSupplier(CollateralCache(tmp_path))
        agent = NodeEvidence(CpuEvidence(Tee.TDX, QUOTE, collateral=OTHER))
        assert verified(agent.cpu.collateral) is not None
        supplied = await supplier.supply(agent, Sources(pccs_url=pccs.url), NOW)
        assert verified(supplied.cpu.collateral) is None
    # no source at all: the agent's collateral stays, and without any it is CollateralMissing
    bare = CollateralSupplier(CollateralCache(), fetch=no_network)
    kept = await bare.supply(agent, Sources(), NOW)
    assert kept.cpu.collateral == OTHER
    missing = await bare.supply(NodeEvidence(CpuEvidence(Tee.TDX, QUOTE)), Sources(), NOW)
    assert verified(missing.cpu.collateral) == "CollateralMissing"


def test_a_malformed_bundle_is_a_policy_error() -> None:
    with pytest.raises(ValueError, match="bundle"):
        parse_bundle(b'{"tcb_info": 1}')
    spec = AttestationPolicySpec.model_validate(
        {"tdx": {"collateral": {"bundle": {"name": "c", "key": "k"}}}}
    )
    with pytest.raises(PolicyError, match="ConfigMap c/k"):
        Policy.from_spec(spec, lambda ref: b"not json")


# --- SEV-SNP: the VCEK from KDS when the agent sends none ---------------------------------------

SNP_REPORT = encoding.decode_blob(read("snp/milan_report.hex"))
VCEK = read("snp/milan_vcek.der")


@asynccontextmanager
async def kds(answers: dict[str, bytes]) -> AsyncIterator[tuple[str, list[str]]]:
    """A KDS stand-in on loopback: the VCEK at its /vcek/v1/<product>/<hwid>?<SPLs> path."""
    requests: list[str] = []

    async def vcek(request: web.Request) -> web.Response:
        requests.append(str(request.rel_url))
        body = answers.get(str(request.rel_url))
        return web.Response(body=body) if body else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", vcek)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", requests
    finally:
        await runner.cleanup()


async def test_snp_vcek_from_kds_then_cached(tmp_path: Path) -> None:
    chip = SNP_REPORT[0x1A0:0x1E0].hex()
    path = f"/vcek/v1/Milan/{chip}?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115"
    async with kds({path: VCEK}) as (url, requests):
        supplier = CollateralSupplier(CollateralCache(tmp_path), fetch=no_network)
        bare = NodeEvidence(CpuEvidence(Tee.SNP, SNP_REPORT))
        missing = appraisal.appraise_cpu(bare.cpu, DEFAULT, now=SNP_AT, report_data=None)
        assert missing.reason == "VcekMissing" and "kdsUrl" in missing.message
        supplied = await supplier.supply(bare, Sources(kds_url=url), NOW)
        assert requests == [path]
        result = appraisal.appraise_cpu(supplied.cpu, DEFAULT, now=SNP_AT, report_data=None)
        assert result.reason is None, result.message
    # the KDS is gone: a restarted operator reads the VCEK from disk
    restarted = CollateralSupplier(CollateralCache(tmp_path), fetch=no_network)
    again = await restarted.supply(bare, Sources(kds_url="http://127.0.0.1:9"), NOW)
    assert again.cpu.certificates == VCEK
    # the agent's own VCEK is used as sent
    sent = NodeEvidence(CpuEvidence(Tee.SNP, SNP_REPORT, certificates=b"agent's"))
    assert (await restarted.supply(sent, Sources(), NOW)).cpu.certificates == b"agent's"


async def test_a_kds_answer_for_another_product_is_refused(tmp_path: Path) -> None:
    genoa = read("roots/amd_ask_ark_genoa.pem")  # an AMD certificate, but not a Milan VCEK
    chip = SNP_REPORT[0x1A0:0x1E0].hex()
    answers = {f"/vcek/v1/Milan/{chip}?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115": genoa}
    async with kds(answers) as (url, requests):
        supplier = CollateralSupplier(CollateralCache(tmp_path), fetch=no_network)
        bare = NodeEvidence(CpuEvidence(Tee.SNP, SNP_REPORT))
        assert (await supplier.supply(bare, Sources(kds_url=url), NOW)) == bare
        assert len(requests) == 2  # Milan refused, Genoa unknown (404)


async def test_amd_crl_from_kds_is_applied_and_cached(tmp_path: Path) -> None:
    at = datetime.fromtimestamp(NOW, UTC)
    sim = SimulatedTee.generate(now=at)
    revoking = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(sim.ark.subject)
        .last_update(at - timedelta(hours=1))
        .next_update(at + timedelta(days=7))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(sim.ask.serial_number)
            .revocation_date(at)
            .build()
        )
        .sign(sim.ark_key, hashes.SHA384(), rsa_padding=PSS)
    )
    der = revoking.public_bytes(serialization.Encoding.DER)
    evidence = NodeEvidence(CpuEvidence(Tee.SNP, sim.snp_report(bytes(64)), sim.snp_certificates()))
    policy = Policy.from_spec(sim.policy_spec())
    async with kds({"/vcek/v1/Milan/crl": der}) as (url, requests):
        supplier = CollateralSupplier(CollateralCache(tmp_path), fetch=no_network)
        crls = await supplier.crls(evidence, Sources(kds_url=url), NOW)
        assert requests == ["/vcek/v1/Milan/crl", "/vcek/v1/Genoa/crl"]  # a v2-style report
        assert await supplier.crls(evidence, Sources(kds_url=url), NOW + 60) == crls
        assert len(requests) == 3  # Milan's CRL is cached until its nextUpdate; Genoa has none
    with_crl = dataclasses.replace(policy, crls=(*policy.crls, *crls))
    cpu = appraisal.appraise_cpu(evidence.cpu, with_crl, now=NOW, report_data=None)
    assert cpu.reason == "CertificateRevoked"
    assert appraisal.appraise_cpu(evidence.cpu, policy, now=NOW, report_data=None).reason is None


# --- renewal in the background --------------------------------------------------------------


async def test_the_collateral_pass_renews_before_next_update(tmp_path: Path) -> None:
    """The operator's collateral pass refetches a platform type's collateral once it is within
    refreshBefore of its nextUpdate, with no node attesting meanwhile."""
    now = int(time.time())  # the pass reads the clock
    at = datetime.fromtimestamp(now, UTC)
    sim = SimulatedTee.generate(now=at).for_node("renew")
    assert sim.tdx is not None
    quote = sim.tdx.quote(bytes(64))
    first = sim.tdx.collateral(at, validity=timedelta(hours=12))  # inside refreshBefore
    renewed = sim.tdx.collateral(at, validity=timedelta(days=30))
    with serve(first) as pccs:
        state = AttestationState("cocoon-system", "agent", False, keys.generate())
        state.collateral = CollateralSupplier(CollateralCache(tmp_path))
        memo = kopf.Memo(attestation=state)
        sources = Sources(pccs_url=pccs.url, refresh_before=86400)
        got = await state.collateral.collateral(quote, sources, now)
        assert got is not None and got[1] == "pccs" and len(pccs.requests) == 4

        pccs.serve(renewed)
        schedule = loops.schedules({})["collateral"]
        await refresh_collateral(memo, schedule)
        assert len(pccs.requests) == 8
        cached = await state.collateral.collateral(quote, sources, now)
        assert cached is not None and cached[1] == "cache"
        assert expires_at(cached[0]) == expires_at(renewed) > expires_at(first)
        on_disk = CollateralCache(tmp_path).entries[key_of_quote(quote)]
        assert expires_at(on_disk) == expires_at(renewed)

        await refresh_collateral(memo, schedule)  # fresh now: nothing fetched
        assert len(pccs.requests) == 8

        pccs.down = True  # a failed renewal keeps the old copy and is retried next pass
        late = expires_at(renewed) - 60
        assert await state.collateral.refresh_due(late) == []
        assert len(pccs.requests) == 9
        assert await state.collateral.collateral(quote, sources, late) == cached
