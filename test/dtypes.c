/* test/dtypes: prints the library's weight formats, one line each, for the
 * test that pins export.py's copy of the table to it:
 *   DTYPE NAME GROUP UNIT_BYTES ROW_BLOCK QUANTIZED DTYPE_FROM_NAME
 * (lucie_dtype() for 1, 2, ... until NULL; the last field is
 * lucie_dtype_from_name(NAME), which must give DTYPE back). */
#include <stdio.h>

#include "../lucie.h"

int main(void) {
    const lucie_dtype_info *t;
    int d;
    for (d = 1; (t = lucie_dtype(d)) != NULL; d++)
        printf("%d %s %d %d %d %d %d\n", d, t->name, t->group, t->unit_bytes, t->row_block, t->quantized,
               lucie_dtype_from_name(t->name));
    return 0;
}
