# mypy: ignore-errors
# (runs inside Triton, which provides triton_python_backend_utils)
"""Streams the prompt's words back one token per response and reports usage at the end.

Usage convention (what the Cocoon meter reads): the last response carries the output tensors
`prompt_tokens` and `completion_tokens` (INT32 [1], totals for the request). Tensors, not response
parameters, because the python backend of Triton 2.51 cannot set response parameters.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _optional_int(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return default if tensor is None else int(tensor.as_numpy().reshape(-1)[0])


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            raw = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy()
            text = raw.reshape(-1)[0]
            words = (text.decode() if isinstance(text, bytes) else str(text)).split() or ["_"]
            max_tokens = _optional_int(request, "max_tokens", 8)
            delay = _optional_int(request, "delay_ms", 0) / 1000.0
            fail_after = _optional_int(request, "fail_after", -1)
            for i in range(max_tokens):
                if delay:
                    time.sleep(delay)
                if i == fail_after:
                    error = pb_utils.TritonError(f"injected failure at token {i}")
                    sender.send(
                        pb_utils.InferenceResponse(error=error),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                    )
                    break
                token = np.array([(words[i % len(words)] + " ").encode()], dtype=np.object_)
                last = i == max_tokens - 1
                outputs = [pb_utils.Tensor("text_output", token)]
                if last:
                    outputs += [
                        pb_utils.Tensor("prompt_tokens", np.array([len(words)], np.int32)),
                        pb_utils.Tensor("completion_tokens", np.array([max_tokens], np.int32)),
                    ]
                sender.send(
                    pb_utils.InferenceResponse(output_tensors=outputs),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if last else 0,
                )
            else:
                if max_tokens <= 0:
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
