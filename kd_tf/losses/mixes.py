"""KD-pt+sim and KD-pt+rel: gradient rescaling (KD-pt) mixed with class relations (sim or rel)."""

from kd_tf.losses.base import check_range, mix_distributions, register, uniform_except_target
from kd_tf.losses.kd_pt import KDPt
from kd_tf.losses.kd_rel import KDRel
from kd_tf.losses.kd_sim import KDSim


class _PtMix:
    """Mixin: `q̃ = mix·q̃_pt + (1 - mix)·q̃_other`, with the payload of KD-pt (`q^T_t`)."""

    def payload_size(self, num_classes):
        return 1

    teacher_payload = KDPt.teacher_payload

    def target_distribution(self, labels, payload, num_classes):
        pt = uniform_except_target(labels, payload[..., 0], num_classes)
        other = super().target_distribution(labels, None, num_classes)
        return mix_distributions(pt, other, self.mix)

    def get_config(self):
        return {**super().get_config(), "mix": self.mix}


@register("kd_pt_sim", label="KD-pt+sim", table_position=5)
class KDPtSim(_PtMix, KDSim):
    """`q̃ = mix·q̃_pt + (1 - mix)·q̃_sim` (the paper uses `mix = 0.5`).

    Args:
        class_vectors, sim_power, sim_temperature: as `KDSim`.
        mix: `β` in [0, 1], the weight of KD-pt's distribution.
    """

    hyperparameters = (*KDSim.hyperparameters, "mix")

    def __init__(self, class_vectors, mix=0.5, **kwargs):
        check_range("mix", mix, 0, 1)
        super().__init__(class_vectors, **kwargs)
        self.mix = float(mix)


@register("kd_pt_rel", label="KD-pt+rel", table_position=8)
class KDPtRel(_PtMix, KDRel):
    """`q̃ = mix·q̃_pt + (1 - mix)·q̃_rel`.

    Args:
        class_parents, rel_target, rel_sibling: as `KDRel`.
        mix: `β` in [0, 1], the weight of KD-pt's distribution.
    """

    hyperparameters = (*KDRel.hyperparameters, "mix")

    def __init__(self, class_parents, mix=0.5, **kwargs):
        check_range("mix", mix, 0, 1)
        super().__init__(class_parents, **kwargs)
        self.mix = float(mix)
