"""spinnray: an actor-based, distributed emulator of the SpiNNaker2 chip."""
