import json
from nas.spec import *
R1 = Candidate(name="R1 LightMNIST", arch=ArchSpec(blocks=(
    Conv(16, bn=True, act="relu"), Pool(),
    Conv(32, bn=True, act="relu"), Pool(),
    Flatten(), Dropout(0.2), Linear(10))),
    recipe=TrainRecipe(optimizer="adam", lr=0.002, weight_decay=1e-5, batch_size=64, schedule="constant", momentum=0.0))
R2 = Candidate(name="R2 Residual+GAP", arch=ArchSpec(blocks=(
    Conv(16, bn=True, act="relu", dropout=0.03),
    Conv(24, bn=True, act="relu", dropout=0.03), Pool(),
    Residual(body=(Conv(16, k=1, bn=True, act="relu"), Conv(24, bn=True, act="relu", dropout=0.03)),
             shortcut=(Conv(24, k=1),)),
    Pool(),
    Conv(10, k=1), GlobalAvgPool())),
    recipe=TrainRecipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=2e-4, batch_size=32, schedule="onecycle", warmup=0.3))
R4 = Candidate(name="R4 Progressive", arch=ArchSpec(blocks=tuple(
    [Conv(c, bn=True, act="gelu") for c in (4, 8, 12, 16)] + [Pool()] +
    sum([[Conv(c, bn=True, act="gelu"), Pool()] for c in (20, 24, 28)], []) +
    [Flatten(), Dropout(0.15), Linear(56, act="gelu"), Dropout(0.15), Linear(10)])),
    recipe=TrainRecipe(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=4, schedule="onecycle", warmup=0.25, grad_clip=1.0))
for c, f in ((R1, "r1_lightmnist"), (R2, "r2_residual_gap"), (R4, "r4_progressive")):
    open(f"search_spaces/reference/{f}.json", "w").write(c.to_json(indent=2) + "\n")
