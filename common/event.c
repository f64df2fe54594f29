/* event.c — placeholder until written. */
