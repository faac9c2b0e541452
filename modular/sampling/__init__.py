"""Denoise loops on a host's models: the contract between a sampler host and a denoise loop (`contract`), and
resuming a loop from a saved state (`resume`). The step blocks themselves are block files (`modular/blocks/`)."""

from .contract import (
    CHECKED_OUTPUTS, DENOISE_NO_BLOCKS_HINT, GENERATOR_STATE, HOST_VALUES, PROVIDED_IN_LOOP, SCHEDULER_STATE,
    SCHEDULER_TENSORS, STEP_HISTORY, DenoisePlan, HostValues, check_blocks,
    check_finite, check_sigmas, is_denoise_loop, plan_denoise, provided_in_loop, run_denoise, seeded_generator, seeded_noise_sampler,
)
from .resume import NOT_KEPT, continued_schedule, resumable, stopped_at
