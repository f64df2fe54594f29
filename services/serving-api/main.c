/* serving-api — REST, WebSocket and the dashboard over the merged views.
 * Skeleton: configuration, admin endpoints and orderly shutdown; its work lands with its issue. */
#include "qs/service.h"

static const qs_service_def def = {
    .name = "serving-api",
    .summary = "REST, WebSocket and the dashboard over the merged views",
    .admin_port = 8094,
};

int main(int argc, char **argv) {
  qs_service svc;
  if (qs_service_init(&svc, &def, argc, argv) != 0)
    return svc.exit_code;
  return qs_service_run(&svc);
}
