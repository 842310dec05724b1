/* comm_mpi.h -- make a communicator (comm.h) from an MPI communicator. */
#ifndef SL_PARALLEL_COMM_MPI_H
#define SL_PARALLEL_COMM_MPI_H

#include <mpi.h>

#include "parallel/comm.h"

/* Takes ownership of comm (freed by the communicator's destroy). */
int sl_comm_mpi_wrap(MPI_Comm comm, const char *name, double timeout_s, sl_comm *out, sl_err *err);

/* Seconds this process has spent in completed communications, all groups. */
double sl_comm_mpi_seconds(void);

/* The job's ranks on this machine, watched while a wait lasts (comm_mpi.c):
 * pids[r] is world rank r's process id where it runs on this machine and is
 * not this process, else 0; n_ranks 0 stops watching. Set once the ranks
 * know each other (sl_dist_set_layout), by every rank. */
int sl_comm_mpi_watch_ranks(const int *pids, int n_ranks, sl_err *err);
/* Within a wait that began at `start`: past half a second, every quarter
 * second (*watched: the time of the last look, start initially), whether a
 * watched rank's process has exited; SL_EIO naming it and saying that `op`
 * (over the `group` group, where not NULL) cannot finish, else SL_OK. Every
 * wait with a deadline calls it. */
int sl_comm_mpi_watch(double start, double *watched, const char *op, const char *group, sl_err *err);

/* The MPI communicator under an MPI-made communicator. */
MPI_Comm sl_comm_mpi_handle(const sl_comm *c);

#endif
