"""Label, taint and annotation keys that form the contract between the operator, nodes and pods."""

from __future__ import annotations

from cocoon import GROUP

TEE_LABEL = f"{GROUP}/tee"
ATTESTED_LABEL = f"{GROUP}/attested"
GPU_CC_LABEL = f"{GROUP}/gpu-cc"
UNATTESTED_TAINT = f"{GROUP}/unattested"
NFD_TDX_LABEL = "feature.node.kubernetes.io/cpu-security.tdx.protected"
NFD_SNP_LABEL = "feature.node.kubernetes.io/cpu-security.sev.snp.enabled"
POOL_LABEL = f"{GROUP}/pool"
MANAGED_BY = "app.kubernetes.io/managed-by"
OPERATOR_NAME = "cocoon-operator"
GPU_RESOURCE = "nvidia.com/gpu"
