"""TS training with a user's Accelerator: for real, in subprocesses (the Accelerate state is
process-wide), one process with bf16 and gradient accumulation, and two CPU processes (gloo)."""

import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("accelerate_worker.py")


def run(cmd, out):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    return [
        torch.load(p, weights_only=True)
        for p in sorted(out.glob("rank*.pt"), key=lambda p: int(p.stem[4:]))
    ]


def check_resume(rank):
    """load_state then the same epoch again: the same noise and the same weights, bit for bit."""
    for a, b in zip(rank["second_noise"], rank["replay_noise"], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(rank["params"], rank["replay_params"], strict=True):
        assert torch.equal(a, b)
    assert all(math.isfinite(v) for v in rank["losses"])


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [[], ["--recipe", "ts-hat"], ["--recipe", "ts-free-hat"]])
def test_one_process_bf16_with_gradient_accumulation(tmp_path, recipe):
    cmd = [sys.executable, str(WORKER), str(tmp_path), "--mixed-precision", "bf16"]
    (rank,) = run([*cmd, "--accumulate", "2", *recipe], tmp_path)
    assert rank["model_dtype"] == "torch.bfloat16"  # the model ran under bf16 autocast
    assert rank["changed"] == [False, True] * 4  # weights move once every two batches
    if recipe:  # half of each batch of 2 is adversarial (free-hat: from its second step on)
        assert rank["n_adv"][1:] == [1] * 15
    check_resume(rank)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [[], ["--recipe", "ts-free-hat"], ["--recipe", "hat"]])
def test_two_processes_draw_different_noise_and_keep_identical_weights(tmp_path, recipe):
    # `accelerate launch --cpu --num_processes 2` starts ONE process (without mpirun, accelerate
    # 1.x runs --cpu through its single-process launcher); --multi_gpu starts two through
    # torchrun, and the worker's Accelerator(cpu=True) makes them a gloo MULTI_CPU group.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_port())]
    ranks = run([*launch, str(WORKER), str(tmp_path), *recipe], tmp_path)
    assert len(ranks) == 2 and ranks[0]["num_processes"] == 2
    assert ranks[0]["distributed_type"] == "MULTI_CPU" and ranks[0]["backend"] == "gloo"
    r0, r1 = ranks
    # each rank drew its own noise (seed + rank) ...
    noise0, noise1 = r0["first_noise"] + r0["second_noise"], r1["first_noise"] + r1["second_noise"]
    assert len(noise0) == len(noise1) == 8
    for a, b in zip(noise0, noise1, strict=True):
        assert a.shape == b.shape and not torch.equal(a, b)
    # ... while DDP kept the weights identical across ranks
    for a, b in zip(r0["params"], r1["params"], strict=True):
        assert torch.equal(a, b)
    assert r0["changed"] == [True] * 4
    # after load_state each rank resumes its *own* noise stream
    check_resume(r0)
    check_resume(r1)
