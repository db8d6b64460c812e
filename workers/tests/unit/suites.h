#ifndef LLMD_TEST_SUITES_H
#define LLMD_TEST_SUITES_H

#include <check.h>

Suite *kv_blocks_suite(void);
Suite *scheduler_suite(void);
Suite *api_suite(void);
Suite *misc_suite(void);
Suite *cpu_model_suite(void);
Suite *cpu_engine_suite(void);
Suite *fleet_suite(void);
Suite *cuda_host_suite(void);

#endif
