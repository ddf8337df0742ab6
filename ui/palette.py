"""One colour scheme for every view."""

ACCEPTED = "#2e9d5b"     # a draft token the full model accepted
REJECTED = "#d64545"     # a draft token the full model rejected
CORRECTED = "#e08a1e"    # the full model's own token at the first mismatch
BONUS = "#3b6fd8"        # the full model's extra token after a fully accepted draft
PLAIN = "#6b7280"        # a token from a plain full-model step (prefill, vanilla, auto fallback)
SKIPPED = "#7c3aed"      # a layer the draft skipped
RAN = "#eef0f4"          # a layer the draft ran
DP = "#f2c14e"           # a layer-DP refresh / the backtracked path
VANILLA = "#9aa3b2"

KIND_COLOURS = {"accepted": ACCEPTED, "rejected": REJECTED, "corrected": CORRECTED, "bonus": BONUS,
                "plain": PLAIN}
KIND_LABELS = {"accepted": "draft accepted", "rejected": "draft rejected", "corrected": "corrected by full model",
               "bonus": "bonus token", "plain": "full-model step"}
