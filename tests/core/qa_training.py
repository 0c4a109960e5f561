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
