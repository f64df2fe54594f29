/* regions.c — placeholder until written. */
