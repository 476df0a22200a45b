"""The SageMaker GPU instance types a gpu model may name, with what one GPU of each holds.

GPU counts and memory per GPU are AWS's published specifications: the GPU table of AWS Batch's
"GPU jobs" page (https://docs.aws.amazon.com/batch/latest/userguide/gpu-jobs.html: g4dn, g5, g6,
p3) and EC2's accelerated computing specifications
(https://docs.aws.amazon.com/ec2/latest/instancetypes/ac.html: g6e, p4d, p4de, p5, p5e, p5en); the
ml.* names are those SageMaker hosting offers (API reference, AIRecommendationInstanceDetail's
InstanceType values:
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_AIRecommendationInstanceDetail.html).

The GPU server runs one ONNX Runtime session on one device (functions/providers.py names no
device_id: device 0), so what a model can use is ONE GPU's memory, whatever the instance's count;
a multi-GPU instance buys throughput per instance (more CPU, more network), not room for a larger
model. What one GPU offers the process is less than its label on GDDR6 cards, which keep 1/16 of
their memory for ECC (enabled on AWS): nvidia-smi shows 15,360 MiB on a 16 GiB T4, 23,034 MiB on a
24 GiB L4 and A10G, 46,068 MiB on a 48 GiB L40S. HBM cards (V100, A100, H100, H200) carry ECC
inline and lose only what the driver keeps, which GPU_OVERHEAD_MB in infra/build/memory.py covers.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB_PER_GIB = 1024


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: int  # as AWS publishes it, per GPU
    ecc_reserved: float = 0.0  # the fraction ECC keeps (GDDR6: 1/16)

    @property
    def usable_mb(self) -> int:
        """MiB one process can allocate on one such GPU, before the CUDA context takes its share."""
        return int(self.memory_gib * MIB_PER_GIB * (1 - self.ecc_reserved))


T4 = Gpu("NVIDIA T4", 16, 1 / 16)
A10G = Gpu("NVIDIA A10G", 24, 1 / 16)
L4 = Gpu("NVIDIA L4", 24, 1 / 16)
L40S = Gpu("NVIDIA L40S", 48, 1 / 16)
V100 = Gpu("NVIDIA V100", 16)
A100 = Gpu("NVIDIA A100 40GB", 40)
A100_80 = Gpu("NVIDIA A100 80GB", 80)
H100 = Gpu("NVIDIA H100", 80)
H200 = Gpu("NVIDIA H200", 141)


@dataclass(frozen=True)
class GpuInstance:
    instance_type: str
    gpus: int
    gpu: Gpu

    def describe(self) -> str:
        """``ml.g6.xlarge (1 x NVIDIA L4, 22.5 GiB usable per GPU)``."""
        return f"{self.instance_type} ({self.gpus} x {self.gpu.name}, {self.gpu.usable_mb / MIB_PER_GIB:.1f} GiB usable per GPU)"


def _family(family: str, gpu: Gpu, counts: dict[str, int]) -> dict[str, GpuInstance]:
    return {f"ml.{family}.{size}": GpuInstance(f"ml.{family}.{size}", count, gpu) for size, count in counts.items()}


_SINGLE = {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1}
INSTANCES: dict[str, GpuInstance] = {
    **_family("g4dn", T4, {**_SINGLE, "12xlarge": 4}),
    **_family("g5", A10G, {**_SINGLE, "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    **_family("g6", L4, {**_SINGLE, "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    **_family("g6e", L40S, {**_SINGLE, "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    **_family("p3", V100, {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8}),
    **_family("p4d", A100, {"24xlarge": 8}),
    **_family("p4de", A100_80, {"24xlarge": 8}),
    **_family("p5", H100, {"4xlarge": 1, "48xlarge": 8}),
    **_family("p5e", H200, {"48xlarge": 8}),
    **_family("p5en", H200, {"48xlarge": 8}),
}


def gpu_instance(instance_type: str) -> GpuInstance | None:
    """The instance type's GPUs, or None for a type this table does not know (the check is skipped)."""
    return INSTANCES.get(instance_type)


def smallest_fitting(need_mb: float) -> GpuInstance | None:
    """The instance with the fewest GPUs (what the price follows), then the least memory, whose one
    GPU holds ``need_mb``; None when no GPU in the table does."""
    fitting = [i for i in INSTANCES.values() if i.gpu.usable_mb >= need_mb]
    return min(fitting, key=lambda i: (i.gpus, i.gpu.usable_mb), default=None)


__all__ = ["INSTANCES", "Gpu", "GpuInstance", "gpu_instance", "smallest_fitting"]
