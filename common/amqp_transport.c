/* amqp_transport.c — placeholder until written. */
