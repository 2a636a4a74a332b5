import numpy as np
import pytest

from service.errors import BadRequest, InvalidArgument, TooManyImages
from service.frontend.tensors import (
    InputTensor,
    ModelSignature,
    RequestedOutput,
    bytes_count,
    check_shape,
    deserialize_bytes,
    model_input,
    numeric_from_list,
    numeric_from_raw,
    output_tensor,
    requested_outputs,
    serialize_bytes,
)

SIGNATURE = ModelSignature("input", "FP32", (3, 4, 4), "logits", 3, ("cat", "dog", "owl"))


def test_bytes_round_trip():
    items = [b"", b"\xff\xd8jpeg", b"x" * 300]
    raw = serialize_bytes(np.array(items, dtype=object))
    assert deserialize_bytes(raw, 3, "input") == items
    assert deserialize_bytes(memoryview(raw), 3, "input") == items


@pytest.mark.parametrize(
    "raw,count,fragment",
    [
        (b"\x02\x00\x00\x00ab\x01\x00\x00\x00c", 1, "does not match its shape's 1 elements"),
        (b"\x02\x00\x00\x00ab", 2, "1 BYTES elements, its shape needs 2"),
        (b"\xff\x00\x00\x00ab", 1, "runs past the end"),
        (b"\x02\x00", 1, "does not match"),
    ],
)
def test_bad_bytes_framing(raw, count, fragment):
    with pytest.raises(BadRequest, match=fragment):
        deserialize_bytes(raw, count, "input")


def test_a_bytes_count_over_the_limit_is_refused_before_reading():
    assert bytes_count((2, 1), max_images=2) == 2
    with pytest.raises(TooManyImages, match="4000000 images"):
        bytes_count((4_000_000,), max_images=64)


@pytest.mark.parametrize("shape", [(-1,), (10**30,), (2**32, 2**32), (1,) * 33, (2**16, 2**16)])
def test_shapes_that_are_negative_or_too_large(shape):
    with pytest.raises(BadRequest, match="negative or too large"):
        check_shape(list(shape))


def test_numeric_tensors_from_raw_and_lists():
    x = np.arange(6, dtype="<f4").reshape(2, 3)
    np.testing.assert_array_equal(numeric_from_raw(x.tobytes(), "FP32", (2, 3), "input"), x)
    np.testing.assert_array_equal(numeric_from_list([[0, 1, 2], [3, 4, 5]], "FP32", (2, 3), "input"), x)
    with pytest.raises(BadRequest, match="24 bytes of data, shape \\[3, 3\\] of FP32 needs 36"):
        numeric_from_raw(x.tobytes(), "FP32", (3, 3), "input")
    with pytest.raises(BadRequest, match="not all FP32"):
        numeric_from_list(["a"] * 6, "FP32", (2, 3), "input")
    for datatype, values in (("UINT8", [300]), ("UINT8", [-1]), ("INT64", [2**70])):
        with pytest.raises(BadRequest, match=f"not all {datatype}"):
            numeric_from_list(values, datatype, (1,), "input")


def test_model_input_takes_images_or_the_models_tensor():
    images, batch = model_input(SIGNATURE, [InputTensor("input", "BYTES", (2,), [b"a", b"b"])], max_images=4)
    assert images == [("image 0", b"a"), ("image 1", b"b")] and batch is None
    x = np.zeros((2, 3, 4, 4), np.float32)
    images, batch = model_input(SIGNATURE, [InputTensor("input", "FP32", x.shape, x)], max_images=4)
    assert images is None and batch.shape == (2, 3, 4, 4) and batch.flags.c_contiguous


@pytest.mark.parametrize(
    "tensor,error,fragment",
    [
        (InputTensor("image", "BYTES", (1,), [b"a"]), BadRequest, "one input named 'input'"),
        (InputTensor("input", "BYTES", (0,), []), BadRequest, "no images"),
        (InputTensor("input", "UINT8", (1, 3, 4, 4), np.zeros((1, 3, 4, 4), np.uint8)), BadRequest, "got UINT8"),
        (
            InputTensor("input", "FP32", (1, 3, 4, 5), np.zeros((1, 3, 4, 5), np.float32)),
            BadRequest,
            "got [1, 3, 4, 5]",
        ),
        (InputTensor("input", "FP32", (3, 4, 4), np.zeros((3, 4, 4), np.float32)), BadRequest, "got [3, 4, 4]"),
        (InputTensor("input", "FP32", (5, 3, 4, 4), np.zeros((5, 3, 4, 4), np.float32)), TooManyImages, "limit is 4"),
    ],
)
def test_model_input_refuses(tensor, error, fragment):
    with pytest.raises(error, match=fragment.replace("[", "\\[").replace("]", "\\]")):
        model_input(SIGNATURE, [tensor], max_images=4)


def test_outputs_default_to_the_logits_and_are_checked():
    assert requested_outputs(SIGNATURE, [], max_k=100) == [RequestedOutput("logits")]
    with pytest.raises(BadRequest, match="one output named 'logits'"):
        requested_outputs(SIGNATURE, [RequestedOutput("probs")], max_k=100)
    with pytest.raises(InvalidArgument, match="between 1 and 3"):
        requested_outputs(SIGNATURE, [RequestedOutput("logits", classification=4)], max_k=100)


def test_classification_is_score_index_label_highest_first():
    logits = np.array([[0.5, 2.0, -1.0], [3.0, 3.0, 1.0]], np.float32)
    tensor = output_tensor(SIGNATURE, RequestedOutput("logits", classification=2), logits)
    assert tensor.datatype == "BYTES" and tensor.shape == (2, 2)
    assert tensor.data.tolist() == [
        [b"2.000000:1:dog", b"0.500000:0:cat"],
        [b"3.000000:0:cat", b"3.000000:1:dog"],  # ties: the lower index first
    ]
    plain = output_tensor(SIGNATURE, RequestedOutput("logits"), logits)
    assert plain.datatype == "FP32" and plain.shape == (2, 3) and plain.data is logits
