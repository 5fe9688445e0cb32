# End-to-end test of the Python client (samples/clients/python) against `slm serve`: health,
# reflection, ListModels, Converse (RESPOND, LINEAR16 and FLOAT32), Transcribe, auth, draining on
# SIGTERM. Needs Debian's /usr/bin/python3 with python3-grpcio and python3-protobuf, protoc and
# espeak-ng; the script exits 77 (reported as skipped) when one of them is missing.
add_test(NAME python_client
         COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/samples/clients/python/test_client.py
                 --slm $<TARGET_FILE:slm>
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(python_client PROPERTIES LABELS "serve;slow" TIMEOUT 120 SKIP_RETURN_CODE 77)
