"""The one training loop: records per epoch, weighted means, hooks, no random numbers of its own."""

import torch
from neuralmimo.training import train_loop


def test_loop_learns_records_and_calls_hooks():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    w = torch.zeros(3, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    calls = {"backward": 0, "end": []}

    def batches(e):
        return torch.randperm(256, generator=g).split(64)

    def step(idx):
        loss = ((x[idx] @ w - y[idx]) ** 2).mean()
        return loss, float(loss.detach()), len(idx)

    def after_backward(e):
        calls["backward"] += 1

    state = torch.random.get_rng_state()
    hist = train_loop(opt, step, batches, epochs=5, epoch_offset=10, loss_key="mse", after_backward=after_backward,
                      end_of_epoch=lambda e: calls["end"].append(e) or {"val": -e})
    assert torch.equal(torch.random.get_rng_state(), state)  # the loop draws nothing itself
    assert [r["epoch"] for r in hist] == [11, 12, 13, 14, 15] and [r["val"] for r in hist] == [0, -1, -2, -3, -4]
    assert calls["backward"] == 5 * 4 and calls["end"] == [0, 1, 2, 3, 4]
    assert hist[-1]["mse"] < 0.01 * hist[0]["mse"]
    assert all(r["seconds"] >= 0 for r in hist)


def test_single_process_helpers_and_the_seed_offset_that_torch_keeps():
    from neuralmimo import training

    assert training.world() == (0, 1) and training.writer() and training.my_share([1, 2, 3]) == [1, 2, 3]
    idx = torch.arange(10)
    assert training.shard(idx) is idx and training.local_batch(7) == 7 and training.rank_seed(5) == 5
    # torch's CPU generator keeps the seed's low 32 bits only: an offset above them changes nothing
    same = [torch.rand(3, generator=torch.Generator().manual_seed(s)) for s in (5, 5 + (1 << 40))]
    assert torch.equal(*same)


def test_device_names_and_moves():
    import dataclasses

    import pytest
    from neuralmimo import training

    assert training.device_name("cuda:1") == "cuda:1" and training.check_device("cpu").type == "cpu"
    for bad in ("gpu", "mps", 3):
        with pytest.raises(ValueError, match="cpu, cuda or cuda:N"):
            training.device_name(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            training.check_device("cuda")

    @dataclasses.dataclass
    class Batch:
        x: torch.Tensor
        meta: tuple

    b = training.to_device(Batch(torch.ones(2), (torch.zeros(1), "k")), "cpu")
    assert isinstance(b, Batch) and b.meta[1] == "k" and torch.equal(b.x, torch.ones(2))
    with training.use_device("cpu") as dev:
        assert training.current_device() == dev
    assert training.current_device().type == "cpu"


def test_checkpoints_carry_state_and_refuse_another_training(tmp_path):
    import pytest
    from neuralmimo import training

    def run(epochs, resume=False, stop=None):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(1)
        carry = training.Carry(count=0, best=torch.zeros(1))

        def batches(e):
            if e == stop:
                raise KeyboardInterrupt
            x = torch.randn(64, 3, generator=g)
            return [(x[i:i + 16], x[i:i + 16].sum(1, keepdim=True)) for i in range(0, 64, 16)]

        def step(b):
            loss = ((model(b[0]) - b[1]) ** 2).mean()
            carry["count"] += 1
            carry["best"] = torch.minimum(carry["best"] - 1, loss.detach().reshape(1))
            return loss, float(loss.detach()), 16

        with training.checkpointing(tmp_path / "ck", every=2, resume=resume), training.checkpoint_stage("toy"):
            hist = training.train_loop(opt, step, batches, epochs=epochs, model=model, generators=(g,),
                                       state={"carry": carry})
        return model, carry, hist

    whole, c_whole, h_whole = run(6)
    with pytest.raises(KeyboardInterrupt):
        run(6, stop=5)  # checkpoints after epochs 2 and 4; dies in the 6th
    resumed, c_res, h_res = run(6, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    assert c_res["count"] == c_whole["count"] == 24 and torch.equal(c_res["best"], c_whole["best"])
    assert [r["epoch"] for r in h_res] == list(range(1, 7)) and h_res[4].get("resumed") and "train" not in h_res[0]
    assert h_res[-1]["loss"] == h_whole[-1]["loss"] and h_whole[-1]["loss_se"] > 0
    with pytest.raises(ValueError, match="another training"):
        run(7, resume=True)
