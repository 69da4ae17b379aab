"""The learning-rule settings of the shipped YAML configs (Base-Feedback-RetinaNet.yaml), as
keywords of ``signsym_det.lazy.apply_feedback``: sign-symmetry everywhere, Xiao et al.'s He
scale in the backbone (BatchNorm follows every conv) and the scale of the layer's own weights
(mean |W|) in FPN, head and predictor, where no normalisation follows."""

feedback = dict(
    rule="sign_symmetry",
    scale="xiao",
    parts=dict(
        fpn=dict(scale="weight_mean"),
        head=dict(scale="weight_mean"),
        predictor=dict(scale="weight_mean"),
    ),
)
