#!/usr/bin/env bash
# Every run of docs/results/decentralized.md (Fashion-MNIST, 2NN MLP, seed 1, one torch thread per run).
# Usage: OUT=/tmp/dec bash docs/results/decentralized/runs.sh; then python docs/results/decentralized/report.py 0.7 0.78
set -u
OUT=${OUT:-/tmp/dec}
export OMP_NUM_THREADS=1
F="--dataset fashion-mnist --model mlp --batch-size 32 --lr 0.05 --device cpu --threads 1 --quiet --seed 1"
run() { name=$1; shift; [ -f "$OUT/$name/summary.json" ] || fedloom run "$@" --out "$OUT/$name" > "$OUT/$name.log" 2>&1; }
mkdir -p "$OUT"

# 14 nodes, GossipFL's measured bandwidth; Dir(0.5) 200 iterations, IID 100 iterations; 5 minibatch steps each
for part in dir iid; do
  if [ $part = dir ]; then P="--partition dirichlet --alpha 0.5"; R=200; FR=16; else P="--partition iid"; R=100; FR=8; fi
  G="--pattern gossip --clients 14 --rounds $R --eval-every 20 --gossip.bandwidth measured $P"
  run n14-$part-gossipfl $F $G --algorithm gossipfl --topology saps --gossipfl.ratio 0.1 --gossipfl.steps 5
  run n14-$part-dpsgd $F $G --algorithm dpsgd --topology ring --dpsgd.steps 5
  run n14-$part-choco $F $G --algorithm choco --topology ring --choco.ratio 0.1 --choco.steps 5
  run n14-$part-dcd $F $G --algorithm dcd-psgd --topology ring --dcd-psgd.ratio 0.25 --dcd-psgd.steps 5
  run n14-$part-fedavg $F --clients 14 --rounds $FR --eval-every 1 $P --algorithm fedavg --local-epochs 1
done
G="--pattern gossip --clients 14 --rounds 200 --eval-every 20 --gossip.bandwidth measured --partition dirichlet --alpha 0.5"
run n14-dir-gossipfl-rho001 $F $G --algorithm gossipfl --topology saps --gossipfl.ratio 0.01 --gossipfl.steps 5
run n14-dir-dpsgd-matching $F $G --algorithm dpsgd --topology matching --dpsgd.steps 5

# 100 nodes, random bandwidth U[0, 5), Dir(0.5), 40 iterations
G="--pattern gossip --clients 100 --rounds 40 --eval-every 20 --gossip.bandwidth random --partition dirichlet --alpha 0.5"
run n100-dir-gossipfl $F $G --algorithm gossipfl --topology saps --gossipfl.ratio 0.1 --gossipfl.steps 5
run n100-dir-dpsgd $F $G --algorithm dpsgd --topology ring --dpsgd.steps 5
run n100-dir-choco $F $G --algorithm choco --topology ring --choco.ratio 0.1 --choco.steps 5

# BlockDFL, 20 participants (10 providers, 5 aggregators, 5 verifiers), IID, 30 rounds of one local epoch
B="--pattern blockdfl --algorithm blockdfl --clients 20 --rounds 30 --eval-every 5 --partition iid --local-epochs 1"
run bdfl-0 $F $B
run bdfl-20 $F $B --attack signflip --attack.fraction 0.2
run bdfl-40 $F $B --attack signflip --attack.fraction 0.4
run bdfl-40-a7v7 $F ${B/--clients 20/--clients 30} --blockdfl.aggregators 7 --blockdfl.verifiers 7 --attack signflip --attack.fraction 0.4
S="--clients 20 --join-ratio 0.5 --rounds 30 --eval-every 5 --partition iid --local-epochs 1 --algorithm fedavg"
run fedavg-20-clean $F $S
run fedavg-20-signflip40 $F $S --attack signflip --attack.fraction 0.4

# GossipFL's window at 100 nodes: T_thres = 10 instead of 3
G="--pattern gossip --clients 100 --rounds 40 --eval-every 20 --gossip.bandwidth random --partition dirichlet --alpha 0.5"
run n100-dir-gossipfl-window10 $F $G --algorithm gossipfl --topology saps --gossip.window 10 --gossipfl.ratio 0.1 --gossipfl.steps 5
