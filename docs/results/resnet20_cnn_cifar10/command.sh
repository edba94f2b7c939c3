# run from a snapshot of commit fe4ec09 (addercore, addercore_ext with its built kernels, examples)
python examples/train_cifar.py --data-dir /work/shared/data/cifar-10-batches-py --no-download --model resnet20 --kind cnn --epochs 10 --threads 1 --seed 0 --out /work/main/docs/results/resnet20_cnn_cifar10 --log-interval 60
# 05:27 resumed after an external SIGTERM at 05:25:
python examples/train_cifar.py --data-dir /work/shared/data/cifar-10-batches-py --no-download --model resnet20 --kind cnn --epochs 10 --threads 1 --seed 0 --out /work/main/docs/results/resnet20_cnn_cifar10 --log-interval 60 --resume
# 05:33 resumed from a snapshot of commit 3b49b1b (compiled BatchNorm): python examples/train_cifar.py --data-dir /work/shared/data/cifar-10-batches-py --no-download --model resnet20 --kind cnn --epochs 10 --threads 1 --seed 0 --out /work/main/docs/results/resnet20_cnn_cifar10 --log-interval 60 --resume
# 07:09 stopped by SIGTERM at the end of the session; continue with the last command above (it has --resume)
# 07:27 resumed (session 2) from a snapshot of commit 9ec5626: same command with --resume
# 08:07 finished epoch 10 (final test accuracy 83.68%)
# 02:23 UTC session 4: test accuracy after BatchNorm re-estimation on 2000 training images (bn_reestimated.json):
python docs/results/bn_reestimate.py docs/results/resnet20_cnn_cifar10 --images 2000 --threads 2
