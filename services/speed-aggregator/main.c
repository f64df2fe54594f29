/* speed-aggregator — consumes the hub: event-time windows, alerts, live pushes to Redis.
 * Skeleton: configuration, admin endpoints and orderly shutdown; its work lands with its issue. */
#include "qs/service.h"

static const qs_service_def def = {
    .name = "speed-aggregator",
    .summary = "consumes the hub: event-time windows, alerts, live pushes to Redis",
    .admin_port = 8092,
};

int main(int argc, char **argv) {
  qs_service svc;
  if (qs_service_init(&svc, &def, argc, argv) != 0)
    return svc.exit_code;
  return qs_service_run(&svc);
}
