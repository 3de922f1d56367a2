#!/usr/bin/env bash
# Generator unlearning on Fashion-MNIST (docs/methods/generator_unlearning.md): forget classes 0-4 of the MAE
# pre-trained on the pool, centre hole of 14 px. Each argument is a seed (default: 0 1 2); seed S unlearns from
# the MAE pre-trained with seed S and compares with the retrain reference pre-trained with seed S, and seeds the
# unlearning (batch order, masks, noise images). Per seed S it needs
#   cl-bench pretrain --model vit_micro --method mae --seed S
#   cl-bench pretrain --model vit_micro --method mae --classes 5,6,7,8,9 --seed S     # the retrain reference
# and once
#   cl-bench pretrain --model vit_micro --method supervised --seed 0                 # the metrics' backbone
# Runs go to $OUT (default runs_generator_unlearning; complete ones are reused), the board is its
# eval_generator_unlearning.csv. Two seeds at once: `sweeps/generator_unlearning_fmnist.sh 1 & ... 2 & wait`.
set -euo pipefail
CL_BENCH=${CL_BENCH:-cl-bench}
OUT=${OUT:-runs_generator_unlearning}
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
for seed in "${seeds[@]}"; do
  common=(--backbone "vit_micro-fmnist-mae-s$seed" --reference "vit_micro-fmnist-mae-c5_6_7_8_9-s$seed" --seed "$seed"
          --out "$OUT" --no-progress)
  for alpha in 0.1 0.25 1.0; do                                       # the paper's method, alpha grid
    "$CL_BENCH" unlearn-generator "${common[@]}" --method encoder_noise --alpha "$alpha"
  done
  for method in random_encoder max_loss noisy_label retain_label; do  # the baselines
    "$CL_BENCH" unlearn-generator "${common[@]}" --method "$method"
  done
  "$CL_BENCH" unlearn-generator "${common[@]}" --retain-source digits  # proxy: another dataset
  # proxy: pool images of other classes (retain 5-7, proxy 8-9), beside the same split with real retain data
  "$CL_BENCH" unlearn-generator "${common[@]}" --retain-classes 5,6,7 --retain-source classes --proxy-classes 8,9
  "$CL_BENCH" unlearn-generator "${common[@]}" --retain-classes 5,6,7
done
