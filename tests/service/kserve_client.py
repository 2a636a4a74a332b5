"""The KServe SDK's V2 REST client against a running service, for tests/service/test_inference_clients.py:

    python -m tests.service.kserve_client URL MODEL '<(N, C, H, W) tensor as JSON>'

prints `{"ready": [server, model], "logits": [as JSON data, as binary data]}`."""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def main(url: str, model: str, tensor: np.ndarray) -> dict:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        ready = [await client.is_server_ready(url), await client.is_model_ready(url, model)]
        logits = []
        for binary in (False, True):
            tensor_input = InferInput(name="input", shape=list(tensor.shape), datatype="FP32")
            tensor_input.set_data_from_numpy(tensor, binary_data=binary)
            response = await client.infer(
                url, InferRequest(model_name=model, infer_inputs=[tensor_input]), model_name=model
            )
            logits.append(response.outputs[0].as_numpy().tolist())
        return {"ready": ready, "logits": logits}
    finally:
        await client.close()


if __name__ == "__main__":
    url, model, data = sys.argv[1:]
    print(json.dumps(asyncio.run(main(url, model, np.asarray(json.loads(data), dtype=np.float32)))))
