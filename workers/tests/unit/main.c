/* Unit-test runner: every suite, one summary line from Check. */

#include <stdlib.h>

#include "suites.h"

int main(void)
{
    SRunner *sr = srunner_create(kv_blocks_suite());
    int failed;

    srunner_add_suite(sr, scheduler_suite());
    srunner_add_suite(sr, api_suite());
    srunner_add_suite(sr, misc_suite());
    srunner_add_suite(sr, cpu_model_suite());
    srunner_add_suite(sr, cpu_engine_suite());
    srunner_add_suite(sr, fleet_suite());
    srunner_add_suite(sr, cuda_host_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
