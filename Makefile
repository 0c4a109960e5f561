# The two commands: `make demo` and `make test`. Both bootstrap first (idempotent).
RX  := .venv/rx/bin
LAB := .venv/lab/bin

.PHONY: bootstrap demo test bench clean

bootstrap:
	@scripts/bootstrap.sh

## demo: the classical receiver (LS + ZF/MMSE/ML/K-best) on a correlated 4x8 channel, table + PNG
demo: bootstrap
	@mkdir -p out/demo
	$(RX)/neuralmimo sim --config configs/sim/demo_kronecker.yaml --plot out/demo/ser_classical.png

## test: the whole QA suite through CTest (rx: core + GNU Radio; lab: core with numpy 2 + Sionna)
test: bootstrap
	cd build && ctest --output-on-failure

## bench: detector throughput against Sionna (lab environment)
bench: bootstrap
	$(LAB)/neuralmimo bench detectors

clean:
	rm -rf build out
