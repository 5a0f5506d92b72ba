/* Not yet written. */
typedef int keys_placeholder;
