"""The DeepSIC synthetic channel [MH]: per-user SNR profiles, users joining and leaving."""

import torch
from neuralmimo.channels import DeepSICSynthetic, sed_matrix
from neuralmimo.snr import noise_variance


def test_deepsic_sed_channel_profiles_and_snr():
    m = DeepSICSynthetic(12, 8, k_min=4, profile_amplitude_db=4.0, change_prob=0.5, seed=3)
    ks = m.user_counts(100)
    assert ks == m.user_counts(100)  # reproducible
    assert min(ks) >= 4 and max(ks) <= 8 and len(set(ks)) > 1
    assert all(abs(a - b) <= 1 for a, b in zip(ks, ks[1:]))  # one user joins or leaves at a time
    for blk in list(m.blocks(30)):
        assert blk.h.shape == (12, blk.n_users)
        g = 10 ** (blk.user_snr_offset_db / 10)
        assert torch.allclose(blk.h.real.double(), sed_matrix(12, blk.n_users) * g.sqrt(), atol=1e-6)
        assert float(blk.h.imag.abs().max()) == 0.0
    # DeepSIC convention: per-user SNR on its strongest antenna = SNR + offset
    snr_db = 10.0
    nv = noise_variance(snr_db, "deepsic", channel_energy=m.mean_energy, nr=12, nt=8)
    h = m.channel(7, 8)
    strongest = h.abs().square().amax(0)  # per user
    per_user_db = 10 * torch.log10(strongest / (nv / 2))  # per real dimension, BPSK
    assert torch.allclose(per_user_db.double(), snr_db + m.snr_offset_db(7), atol=1e-4)
    offsets = torch.stack([m.snr_offset_db(t) for t in range(100)])
    assert float(offsets.abs().max()) <= 4.0 + 1e-9 and float(offsets.std(0).min()) > 1.0  # varies by block
