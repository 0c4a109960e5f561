# The two commands: `make demo` and `make test`. Both bootstrap first (idempotent).
RX  := .venv/rx/bin
LAB := .venv/lab/bin

.PHONY: bootstrap demo test grc bench soak clean

bootstrap:
	@scripts/bootstrap.sh

## demo: the loopback flowgraph (frame source -> MIMO channel -> LS -> ZF and MMSE -> probes) run
## headless next to the core simulation of the same settings, the classical SER sweep with ML, then
## the neural loopbacks on the shipped models (hypernetwork-DeepSIC on the synthetic channel,
## SDNet on the static site it was trained for and SDNet-learngene on UMi task 50, both from UMi
## task 50 generated into the cache by the lab environment if missing),
## each detector next to the lab evaluation of the same model, then the over-the-air loopback (preamble,
## RRC, CFO, timing, phase noise, Frame Sync) next to its genie-synchronised receiver and the replay
## of the shipped SigMF capture
demo: bootstrap
	@mkdir -p out/demo
	$(RX)/neuralmimo loopback --grc examples/loopback_linear.grc --snr 0,5,10,15 --frames 200 --out out/demo/loopback
	$(RX)/neuralmimo sim --config configs/sim/demo_kronecker.yaml --plot out/demo/ser_classical.png
	$(LAB)/neuralmimo umi generate --tasks 50 --drop-per-ue
	$(LAB)/neuralmimo umi generate --tasks 50 --ues 2000 --drop-per-ue
	$(RX)/neuralmimo loopback-neural --out out/demo/neural
	$(RX)/neuralmimo loopback --grc examples/loopback_ota.grc --snr 6,10 --frames 100 --out out/demo/ota
	$(RX)/neuralmimo replay tests/data/ota_capture --out out/demo/replay

## test: the whole QA suite through CTest (rx: core + GNU Radio; lab: core with numpy 2 + Sionna)
test: bootstrap
	cd build && ctest --output-on-failure

## grc: GNU Radio Companion with the [Neural MIMO] blocks, running flowgraphs in the rx environment;
## open a flowgraph with `make grc FLOWGRAPH=examples/loopback_neural.grc`
grc: bootstrap
	$(RX)/neuralmimo companion $(FLOWGRAPH)

## bench: detector throughput against Sionna (lab), flowgraph against its kernels (rx),
## training samples/s of every family in 1 process and 2 DDP processes with paper-scale projections,
## and the SDNet / DetNet loops against plain nn.Sequential loops (rx), neural detectors: SDNet fast path
## against the plain module and the neural block against its kernel (rx)
bench: bootstrap
	$(LAB)/neuralmimo bench detectors
	$(RX)/neuralmimo bench flowgraph --sync-junk noise-dc,tone,saturated
	$(RX)/neuralmimo bench training
	$(RX)/neuralmimo bench neural

## soak: 1e7 vectors through the neural detector block with >= 100 model swaps, then 1e7 through
## the count-framed receiver under a fault schedule (rx)
soak: bootstrap
	$(RX)/neuralmimo soak
	$(RX)/neuralmimo soak --faults

clean:
	rm -rf build out
