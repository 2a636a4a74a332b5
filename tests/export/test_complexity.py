from torch import nn

from export.complexity import complexity
from models import get_model


def test_parameters_and_gflops_of_a_net_counted_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    measured = complexity(net, (3, 4, 4))
    assert measured["params"] == (3 * 8 * 9 + 8) + (128 * 10 + 10)
    multiply_adds = 4 * 4 * 8 * 3 * 9 + 128 * 10  # per output pixel and channel, 3x3x3 weights; then the linear
    assert measured["gflops"] == float(f"{multiply_adds / 1e9:.4g}") > 0


def test_resnet50_costs_what_torchvision_publishes():
    measured = complexity(get_model("resnet50"), (3, 224, 224))
    assert measured["params"] == 25_557_032  # torchvision's table: 25.6 M parameters, 4.09 GFLOPS
    assert abs(measured["gflops"] - 4.09) < 0.05
