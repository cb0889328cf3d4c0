"""pegabridge: every email interaction, in real time, to a brand's Pega endpoint."""
