"""The fairness check both bench comparisons rest on: same weights, same batch, same noise, and the
plain-PyTorch loop's loss and gradients are the project's."""

import pytest
import torch


def assert_reference_matches(trainer, reference, x, rel: float = 1e-6, what: str = "") -> None:
    mine = [trainer.vae.encoder_guide.encoder, trainer.vae.decoder]
    theirs = [reference.encoder, reference.decoder]
    for a_module, b_module in zip(mine, theirs):
        for (key, a), (_, b) in zip(a_module.state_dict().items(), b_module.state_dict().items()):
            assert torch.equal(a, b), f"{what} {key}"
    for step in range(2):  # the first call compiles (project) - the second runs the compiled graph
        torch.manual_seed(step)
        project = trainer.loss(x)
        project_grads = torch.autograd.grad(project, [p for m in mine for p in m.parameters()])
        torch.manual_seed(step)
        plain = reference.loss(x)
        plain_grads = torch.autograd.grad(plain, [p for m in theirs for p in m.parameters()])
        assert float(project.detach()) == pytest.approx(float(plain.detach()), rel=rel), what
        for g, h in zip(project_grads, plain_grads):
            assert torch.allclose(g, h, rtol=1e-3, atol=1e-4 * float(h.abs().max())), what
