/* comm_mpi.h -- make a communicator (comm.h) from an MPI communicator. */
#ifndef SL_PARALLEL_COMM_MPI_H
#define SL_PARALLEL_COMM_MPI_H

#include <mpi.h>

#include "parallel/comm.h"

/* Takes ownership of comm (freed by the communicator's destroy). */
int sl_comm_mpi_wrap(MPI_Comm comm, const char *name, double timeout_s, sl_comm *out, sl_err *err);

/* Seconds this process has spent in completed communications, all groups. */
double sl_comm_mpi_seconds(void);

/* The MPI communicator under an MPI-made communicator. */
MPI_Comm sl_comm_mpi_handle(const sl_comm *c);

#endif
