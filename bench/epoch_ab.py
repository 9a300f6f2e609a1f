"""One epoch of one default-space candidate (RandomSampler seed N, 25k) on 20,000 MNIST images, 1 thread, with the
code in ROOT: run it for two checkouts in turn (A B A B) to compare trainers.

    python bench/epoch_ab.py ROOT SEED
"""
import sys, time, torch, optuna
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
from nas import data as d, train as t
from nas.device import prepare_model, to_device
from nas.space import load_space
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = to_device(d.load("mnist", "/work/shared/datasets", train_subset=20000), torch.device("cpu"))
st = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=int(sys.argv[2])))
c = load_space().sample(st.ask(), 25000)
m = prepare_model(c, 0, torch.device("cpu"))
t0 = time.perf_counter(); r = t.train(m, c.recipe, s, seed=0); 
print(sys.argv[1], "batch", c.recipe.batch_size, "train_s", round(r.train_seconds, 2), "wall", round(time.perf_counter()-t0, 2), "val", r.val_acc)
