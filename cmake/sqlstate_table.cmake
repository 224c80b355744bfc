# Generates the SQLSTATE name table from PostgreSQL's own errcodes.txt, so the table is complete
# for the server version we build against. Run in script mode: -DIN=... -DOUT=...
file(STRINGS "${IN}" lines REGEX "^[0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z] +[SWE] +")
set(body "")
foreach(line IN LISTS lines)
    string(REGEX MATCH "^([0-9A-Z]+) +[SWE] +[A-Z_0-9]+ +([a-z_0-9]+)" matched "${line}")
    if(matched)
        string(APPEND body "    {\"${CMAKE_MATCH_1}\", \"${CMAKE_MATCH_2}\"},\n")
    endif()
endforeach()
file(WRITE "${OUT}.tmp" "// Generated from ${IN} by cmake/sqlstate_table.cmake. Do not edit.\n${body}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
