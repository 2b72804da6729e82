"""Guest-physical and port address spaces: the pure region tree and flatten."""
