"""The ground floor: errors, file writing, seeds, statistics, losses and devices, imported by every package
above and importing none of them."""
