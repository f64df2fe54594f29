/* ehconn.c — placeholder until written. */
