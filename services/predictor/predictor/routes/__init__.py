"""The predictor's routes: thin handlers over :class:`predictor.service.PredictorService`."""

from predictor.routes import feedback, model, models, serving

routers = [serving.router, model.router, models.router, feedback.router]
