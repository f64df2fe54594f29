/* metrics.c — placeholder until written. */
