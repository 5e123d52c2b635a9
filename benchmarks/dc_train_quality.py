"""How recognisable are a trained run's digits? The fraction of guided samples that the course's own digit
classifier (evaluation.train_classifier, trained on the offline MNIST digits) assigns to the requested class.

    python benchmarks/dc_train_quality.py runs/dc-train [--per-class 20] [--scales 1 3] [--seeds 0 1]
"""
import argparse, time
import torch
from diffusion_course.cli import load_trained, make_sample_fn
from diffusion_course.core import make_generator
from diffusion_course.data import mnist_offline
from diffusion_course.evaluation import train_classifier, class_accuracy
from diffusion_course.diffusion.schedules import make_schedule

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('run', help='a run folder written by dc-train (its newest checkpoint is used)')
    p.add_argument('--per-class', type=int, default=20)
    p.add_argument('--scales', type=float, nargs='+', default=[1.0, 3.0])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    p.add_argument('--steps', type=int, default=25, help='DDIM steps')
    a = p.parse_args()
    model, config = load_trained(a.run)
    K, C, H = model.config.num_classes, model.config.in_channels, model.config.input_size
    sched = make_schedule(config['schedule'], config['T'])
    t0 = time.time()
    clf = train_classifier(mnist_offline(H), steps=1500)
    print(f"judge: DigitClassifier, held-out accuracy on real digits {clf.holdout_accuracy:.3f} ({time.time() - t0:.0f} s to train)")
    y = torch.arange(K).repeat_interleave(a.per_class)
    print(f"{'cfg scale':>9s} {'accuracy':>9s}   ({len(y)} samples per seed, seeds {a.seeds}, DDIM {a.steps} steps)")
    for scale in a.scales:
        sample = make_sample_fn(sched, 'ddim', a.steps, 0.0, scale, K)
        accs = [class_accuracy(clf, sample(model, torch.randn(len(y), C, H, H, generator=make_generator(s)), y), y) for s in a.seeds]
        print(f"{scale:9.1f} {sum(accs) / len(accs):9.3f}   per seed {[round(x, 3) for x in accs]}")

if __name__ == '__main__': main()
