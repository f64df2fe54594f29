/* hub — a local Azure Event Hubs: AMQP 1.0 broker with durable partitions and Capture.
 * Skeleton: configuration, admin endpoints and orderly shutdown; its work lands with its issue. */
#include "qs/service.h"

static const qs_service_def def = {
    .name = "hub",
    .summary = "a local Azure Event Hubs: AMQP 1.0 broker with durable partitions and Capture",
    .admin_port = 8090,
};

int main(int argc, char **argv) {
  qs_service svc;
  if (qs_service_init(&svc, &def, argc, argv) != 0)
    return svc.exit_code;
  return qs_service_run(&svc);
}
