"""The doctor's checks, one module per family: data, loss, training, wiring."""
