# run from a snapshot of commit f41e8f7 (addercore, addercore_ext with its built kernels, examples), nice 19
python examples/train_cifar.py --data-dir /work/shared/data/cifar-10-batches-py --no-download --model resnet20 --kind adder --norm l2 --epochs 10 --threads 1 --seed 0 --out /work/main/docs/results/resnet20_adder_l2_cifar10 --log-interval 60
# 01:01 UTC stopped by SIGTERM at the end of session 3 (mid-epoch checkpoint); resume with the current code:
python examples/train_cifar.py --data-dir /work/shared/data/cifar-10-batches-py --no-download --model resnet20 --kind adder --norm l2 --epochs 10 --threads 1 --seed 0 --out docs/results/resnet20_adder_l2_cifar10 --log-interval 60 --resume
# 01:30 UTC session 4: resumed from a snapshot of commit c40056f, nice 19:
python examples/train_cifar.py --data-dir /work/shared/data/cifar-10-batches-py --no-download --model resnet20 --kind adder --norm l2 --epochs 10 --threads 1 --seed 0 --out /work/main/docs/results/resnet20_adder_l2_cifar10 --log-interval 60 --resume
# 04:05 UTC stopped by SIGTERM at the end of session 4 at epoch 8 step 11 (mid-epoch checkpoint); resume with the current code:
python examples/train_cifar.py --data-dir /work/shared/data/cifar-10-batches-py --no-download --model resnet20 --kind adder --norm l2 --epochs 10 --threads 1 --seed 0 --out docs/results/resnet20_adder_l2_cifar10 --log-interval 60 --resume
# 04:29 UTC session 5: resumed from a snapshot of commit 3d4ad4c, nice 19:
python examples/train_cifar.py --data-dir /work/shared/data/cifar-10-batches-py --no-download --model resnet20 --kind adder --norm l2 --epochs 10 --threads 1 --seed 0 --out /work/main/docs/results/resnet20_adder_l2_cifar10 --log-interval 60 --resume
# 05:40 UTC session 5: finished (10/10 epochs, test 81.03%); test accuracy after BatchNorm re-estimation on 2000 training images (bn_reestimated.json):
python docs/results/bn_reestimate.py docs/results/resnet20_adder_l2_cifar10 --images 2000 --threads 1
