# mypy: ignore-errors
# (runs inside Triton, which provides triton_python_backend_utils)
"""Adds two FP32[16] tensors: the cheapest real model, so the meter's cost dominates."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", a + b)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
