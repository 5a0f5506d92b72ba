/* Not yet written. */
typedef int record_placeholder;
