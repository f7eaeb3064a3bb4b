"""Per-image metrics: PSNR, MS-SSIM, LPIPS, hash agreement; retrieval mAP for hash codes."""
from .hashing import bit_agreement, hamming_distance, hash_bits, hash_cosine, pack_hash_bits
from .lpips_metric import LpipsMetric, LpipsUnavailable, find_lpips_backbone
from .quality import ms_ssim, ms_ssim_config, psnr
from .retrieval import average_precisions, mean_average_precision

__all__ = [
    "psnr", "ms_ssim", "ms_ssim_config",
    "LpipsMetric", "LpipsUnavailable", "find_lpips_backbone",
    "hash_bits", "hamming_distance", "bit_agreement", "hash_cosine", "pack_hash_bits",
    "average_precisions", "mean_average_precision",
]
