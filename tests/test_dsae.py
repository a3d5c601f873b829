"""The DSAE itself: shapes, the ELBO's terms, the teacher-forced prior and the options beyond the paper."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from training.config import Objective
from training.dsae import DSAE, DSAEConfig, gaussian_kl

TINY = dict(feature_dim=12, f_dim=5, z_dim=3, hidden_dim=16, frame_hidden=16)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("variant", ["full", "factorised"])
def test_shapes_of_encoder_and_decoder(variant):
    model = DSAE(DSAEConfig(variant=variant, **TINY))
    x = torch.randn(4, 9, 12)
    f_mean, f_logvar, z_mean, z_logvar = model.encode(x)
    assert f_mean.shape == f_logvar.shape == (4, 5)
    assert z_mean.shape == z_logvar.shape == (4, 9, 3)
    assert model.decode(f_mean, z_mean).shape == (4, 9, 12)
    assert model.generate(2, 6).shape == (2, 6, 12)


def test_factorised_posterior_of_z_is_per_frame_and_full_is_not():
    x = torch.randn(1, 8, 12)
    y = x.clone()
    y[0, 0] += 1.0                       # change the first frame only
    fact = DSAE(DSAEConfig(variant="factorised", **TINY))
    full = DSAE(DSAEConfig(variant="full", **TINY))
    for model, depends in ((fact, False), (full, True)):
        z_x = model.encode(x)[2][0, 5]
        z_y = model.encode(y)[2][0, 5]
        assert (not torch.allclose(z_x, z_y)) == depends


def test_gaussian_kl_matches_torch_distributions():
    m1, lv1, m2, lv2 = (torch.randn(7, 3) for _ in range(4))
    expected = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    assert torch.allclose(gaussian_kl(m1, lv1, m2, lv2), expected, atol=1e-5)
    expected0 = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(torch.zeros(7, 3), torch.ones(7, 3)))
    assert torch.allclose(gaussian_kl(m1, lv1), expected0, atol=1e-5)


def test_prior_is_teacher_forced_with_the_given_z():
    """p(z_t | z_<t) at t must depend on z_1..z_{t-1} that it is fed, and not on z_t or later."""
    model = DSAE(DSAEConfig(**TINY))
    z = torch.randn(2, 6, 3)
    mean, _ = model.prior_z(z)
    z2 = z.clone()
    z2[:, 3] += 5.0
    mean2, _ = model.prior_z(z2)
    assert torch.allclose(mean[:, :4], mean2[:, :4])         # steps 1..4 never see z_4
    assert not torch.allclose(mean[:, 4], mean2[:, 4])       # step 5 is conditioned on z_4
    # the first step is the prior given z_0 = 0, the same for every sequence
    assert torch.allclose(mean[0, 0], mean[1, 0])


def test_training_terms_are_the_elbo_without_options():
    model = DSAE(DSAEConfig(**TINY))
    x = torch.randn(3, 5, 12)
    loss, terms = model(x)
    assert torch.isclose(terms["elbo"], -(terms["recon"] + terms["kl_f"] + terms["kl_z"]))
    assert torch.isclose(loss, -terms["elbo"])
    # the Gaussian decoder with unit variance at initialisation: recon >= the entropy floor 0.5 log(2 pi e)
    assert terms["recon"] > 5 * 12 * 0.5 * math.log(2 * math.pi)
    assert terms["kl_f"] > 0 and terms["kl_z"] > 0


def test_kl_warm_up_and_free_bits_change_only_the_penalty():
    x = torch.randn(3, 5, 12)
    model = DSAE(DSAEConfig(**TINY))
    warm_up = Objective(kl_warmup_steps=10)
    torch.manual_seed(1)
    loss0, terms0 = model(x, step=0, objective=warm_up)
    assert torch.isclose(loss0, terms0["recon"])             # KL weight 0 at the first step
    torch.manual_seed(1)
    loss5, terms5 = model(x, step=5, objective=warm_up)
    assert torch.isclose(loss5, terms5["recon"] + 0.5 * (terms5["kl_f"] + terms5["kl_z"]))

    torch.manual_seed(1)
    loss_free, terms_free = model(x, objective=Objective(free_bits_z=100.0))
    # KL_z is far below 100 nats per dimension per frame: the penalty is the floor, the logged KL is not
    assert torch.isclose(loss_free, terms_free["recon"] + terms_free["kl_f"] + 100.0 * 3 * 5)
    assert terms_free["kl_z"] < 100.0


def test_f_swap_decodes_with_the_partners_f():
    model = DSAE(DSAEConfig(**TINY))
    swap = Objective(f_swap_prob=1.0)
    x = torch.randn(2, 5, 12)
    p1, p2 = torch.randn(2, 5, 12), 3 * torch.randn(2, 5, 12)
    torch.manual_seed(3)
    _, t1 = model(x, p1, objective=swap)
    torch.manual_seed(3)
    _, t2 = model(x, p2, objective=swap)
    torch.manual_seed(3)
    _, t_again = model(x, p1, objective=swap)
    assert t1["recon"] == t_again["recon"]
    assert t1["recon"] != t2["recon"] and t1["kl_f"] != t2["kl_f"]
    # without a partner the option does nothing: the paper's ELBO
    _, plain = model(x, objective=swap)
    assert torch.isclose(plain["elbo"], -(plain["recon"] + plain["kl_f"] + plain["kl_z"]))


def test_adversary_learns_speakers_while_reversing_the_encoders_gradient():
    # factorised: z's posterior mean does not depend on the sampled f, so encode() gives the same z_mean
    model = DSAE(DSAEConfig(variant="factorised", n_speakers=3, **TINY))
    adversary = Objective(adv_weight=1.0)
    x = torch.randn(6, 5, 12)
    speaker = torch.tensor([0, 1, 2, 0, 1, 2])
    _, terms = model(x, speaker=speaker, objective=adversary)
    assert {"adv_ce", "adv_acc"} <= set(terms) and terms["adv_ce"] > 0

    # Through the model: the adversary descends its cross-entropy, the z encoder ascends it.
    z_mean = model.encode(x)[2].mean(1)
    plain_ce = torch.nn.functional.cross_entropy(model.speaker_adversary(z_mean), speaker)
    g_plain = torch.autograd.grad(plain_ce, model.z_out.weight)[0]
    model.zero_grad()
    torch.manual_seed(5)
    loss, terms = model(x, speaker=speaker, objective=adversary)
    loss_without_adv = DSAE(model.config)  # same graph without the adversary term, for comparison
    loss_without_adv.load_state_dict(model.state_dict())
    loss_without_adv.speaker_adversary = None
    torch.manual_seed(5)
    base, _ = loss_without_adv(x, speaker=speaker, objective=adversary)
    g_total = torch.autograd.grad(loss, model.z_out.weight)[0]
    g_base = torch.autograd.grad(base, loss_without_adv.z_out.weight)[0]
    # loss = base + CE(adversary(reverse(mean_t z_mean))): the encoder sees base - dCE
    assert torch.allclose(g_total - g_base, -g_plain, atol=1e-5)
    g_adv = torch.autograd.grad(model(x, speaker=speaker, objective=adversary)[0],
                                model.speaker_adversary[0].weight)[0]
    assert g_adv.abs().sum() > 0
    # the objective without an adversary weight leaves the head out of the loss
    _, no_adversary = model(x, speaker=speaker)
    assert "adv_ce" not in no_adversary


def test_grouped_adversary_classifies_the_mean_of_each_same_speaker_group():
    model = DSAE(DSAEConfig(variant="factorised", n_speakers=3, **TINY))
    x = torch.randn(6, 5, 12)
    speaker = torch.tensor([2, 2, 0, 0, 1, 1])
    torch.manual_seed(0)
    _, terms = model(x, speaker=speaker, objective=Objective(adv_weight=1.0, adv_group_size=2))
    z_avg = model.encode(x)[2].mean(1).view(3, 2, -1).mean(1)
    expected = torch.nn.functional.cross_entropy(model.speaker_adversary(z_avg), torch.tensor([2, 0, 1]))
    assert torch.isclose(terms["adv_ce"], expected, atol=1e-6)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="variant"):
        DSAEConfig(variant="both")
    with pytest.raises(ValueError, match="f_swap_prob"):
        Objective(f_swap_prob=2.0)
    with pytest.raises(ValueError, match="adv_group_size"):
        Objective(adv_group_size=0)
    with pytest.raises(ValueError, match="unknown model option"):
        DSAEConfig.from_dict({"zdim": 3})
    with pytest.raises(ValueError, match="unknown model option.*adv_weight"):
        DSAEConfig.from_dict({"adv_weight": 3.0})        # a loss weight is the objective's, not the model's
    with pytest.raises(ValueError, match="unknown objective option"):
        Objective.from_dict({"adv_wieght": 3.0})


def test_old_model_configs_with_loss_weights_still_load():
    from training.config import TrainConfig, model_config_from_dict, split_model_options

    # a checkpoint's state.json model_config from before the split: every field, objective keys included
    old = {**DSAEConfig(**TINY).to_dict(), "kl_f_weight": 1.0, "kl_z_weight": 1.0, "kl_warmup_steps": 2000,
           "free_bits_z": 0.0, "f_swap_prob": 1.0, "adv_weight": 30.0, "adv_group_size": 1, "n_speakers": 4,
           "z_invariance_weight": 0.0}
    assert model_config_from_dict(old) == DSAEConfig(**{**TINY, "n_speakers": 4})
    # without the adversary's weight the old model had no adversary head: the same network now
    no_adversary = model_config_from_dict({**old, "adv_weight": 0.0})
    assert no_adversary.n_speakers == 0 and DSAE(no_adversary).speaker_adversary is None
    # a run's config.json and the shipped train-config files of that time
    config = TrainConfig.from_dict({"model": {"f_dim": 8, "adv_weight": 50, "z_invariance_weight": 5.0}})
    assert config.model["f_dim"] == 8 and "adv_weight" not in config.model
    assert config.objective["adv_weight"] == 50 and config.objective["z_invariance_weight"] == 5.0
    assert config.objective["kl_warmup_steps"] == 2000                # the default still fills the rest
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="adv_weight is given under both"):
        split_model_options({"adv_weight": 1.0}, {"adv_weight": 2.0})
