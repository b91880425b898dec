"""Helpers for testing digitsum and plugins without the network or the real MNIST: tiny data
(:mod:`.fixtures`) and the conformance suite (:mod:`.conformance`; docs/plugins.md)."""

from .conformance import (ConformanceError, check_component, check_doctor_check, check_distribution, check_fusion, check_generator, check_head,
                          check_logger, check_optimizer, check_schedule, check_weights, components_of, tiny_probe, weights_of)
from .conformance.generator import ENCODE_TOLERANCE
from .conformance.runs import MIN_LOSS_FALL, RECIPE_CHECK_BATCH, RECIPE_CHECK_SAMPLES, check_recipe
from .fixtures import random_batch, raw_inputs, tiny_digit_images, write_idx, write_tiny_mnist

__all__ = ["ENCODE_TOLERANCE", "MIN_LOSS_FALL", "RECIPE_CHECK_BATCH", "RECIPE_CHECK_SAMPLES", "ConformanceError",
           "check_component", "check_doctor_check", "check_distribution", "check_fusion", "check_generator", "check_head", "check_logger",
           "check_optimizer", "check_recipe", "check_schedule", "check_weights", "components_of", "random_batch",
           "raw_inputs", "tiny_digit_images", "tiny_probe", "weights_of", "write_idx", "write_tiny_mnist"]  # fmt: skip
